"""Soft labels, aggregated and exported: the read side of the stored votes.

`service` answers "this project's labels by this method" (counts for count methods, a cached
fit for worker models: `fits`); `reads` and `items` page through items with their labels;
`export` streams them as JSONL, CSV or Parquet; `model_loop` and `predictions` combine the
votes with a training job's out-of-sample predictions. The numerics live below, in
app/aggregation (pure numpy); training sits above and reads from here."""

"""The command line (`softlabels`, app/cli/commands.py) and the processes it starts.

Kept empty so that a `serve --workers N` process, which builds its app through
app/cli/serverctl.py, does not import every command on its way."""

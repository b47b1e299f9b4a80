# Where the service is and the key to send (`softlabels serve` printed the admin key at its
# first start and saved it in its data dir).
source .venv/bin/activate
export SOFTLABELS_URL=http://127.0.0.1:8000
export SOFTLABELS_KEY=$(cat ~/.local/share/softlabels/admin.key)
# One way to call the API: JSON in and out, a non-zero exit on an error status.
api() {
  curl -sS --fail-with-body -H "Authorization: Bearer $SOFTLABELS_KEY" \
       -H 'content-type: application/json' "$@"
  echo
}

"""Access control: who is calling (scopes.py), their keys (keys.py), how often they may
call (ratelimit.py), and the first admin key a new server makes (bootstrap.py)."""

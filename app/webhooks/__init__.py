"""Outgoing webhooks: `deliver` queues and sends events to subscribers (in the worker);
`signing` signs them (Standard Webhooks) and checks the signatures of incoming tool
webhooks."""

"""The job state machine: create, claim, dispatch, fair share, idempotency, inputs, results, webhooks' outbox."""

"""Job execution: `run_job`, the Celery app and task, the embedded runner, recovery, webhooks.

Importing this package (and `app.core.dispatchers`, `worker.recovery`, `worker.webhooks`,
`app.core.claim`) never imports torch: the API process uses them. Only `worker.jobs`
(and the task that calls it) pulls in the engine.
"""

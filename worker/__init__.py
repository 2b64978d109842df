"""Job execution: `run_job`, the Celery app and task, the embedded runner, recovery, webhooks.

Importing this package (and `app.core.jobs.dispatch_backends`, `worker.recovery`, `worker.webhooks`,
`app.core.jobs.claim`) never imports torch: the API process uses them. Only `worker.runner`
(and the task that calls it) pulls in the engine.
"""

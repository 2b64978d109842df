"""The trajx HTTP API process: routes, persistence, storage, auth and settings.

Nothing under `app/` imports torch or deserializes tensors; a test pins that.
"""

"""The service's HTTP-free core: persistence, the artifact store and the job state machine.

Imported by the HTTP layer (`app.api`, `app.main`) and by the worker; imports neither
(nor fastapi, nor torch). tests/test_import_graph.py holds it to that.
"""

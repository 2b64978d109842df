"""The trajx demo: train a digits MLP, transfer its trajectory through a local server.

`run_demo` imports torch (training and evaluation happen in this process); the
`trajx demo` command imports it only when run.
"""

"""The job manager: job records, states, queue, limits, retention and event fan-out.

It sits between the HTTP edge (`serving`) and the runtimes and imports no Starlette.
Its contents arrive with the async-jobs work (issue 3); the package exists now so the
top-level layout matches docs/architecture.md.
"""

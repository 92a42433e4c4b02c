"""Deployments: the half of `serving` that freezes pipelines and runs them as daemons.

The daemon itself (HTTP edge, settings, server, logs, `serving serve`) lives in
`serving`; everything here drives it from outside: the registry of snapshots and
deployments, the deployers (flavors), the HTTP client, the SDK and the
`serving pipeline|deployment` verbs. Nothing is imported here eagerly, so
`import serving.deploy.registry` (what a deployed daemon needs) stays cheap.
"""

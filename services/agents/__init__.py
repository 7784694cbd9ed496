"""Local agents for development and tests: the reference agent and the fleet that runs it.

Deliberately imports nothing: `python -m services.agents.reference` must be able to
monkey-patch with gevent before anything else is imported.
"""

"""Support: configuration, embedded services, the scheduler connection, model providers and CLI plumbing.

Nothing here is the streaming pattern itself; it is what lets the tutorial files run anywhere with
nothing configured, and fail with one clear line when something configured does not work.
"""

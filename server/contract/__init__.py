"""The wire contract of the admin API: request/response models and typed errors.

Defined once here, imported by the server's HTTP layer and by the console's client.
It depends on nothing but pydantic and the domain vocabulary.
"""

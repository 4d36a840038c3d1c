class EmbeddedServiceError(RuntimeError):
    """An embedded server could not be started or reached; the message says why and what to do."""

"""The broker itself: the connection (``connection``), streams and durables created or updated
(``provisioning``), their live state (``monitoring``), and pausing a consumer (``control``)."""

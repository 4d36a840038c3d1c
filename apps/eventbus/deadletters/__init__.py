"""Dead letters, all of them: the wire format (``codec``), publishing one (``sending``), the
MAX_DELIVERIES safety net (``advisories``), the consumer that records them (``recorder``),
what operators do with them (``services``) and the reads of the admin and the API
(``selectors``)."""

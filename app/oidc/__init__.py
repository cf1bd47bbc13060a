"""Console-side OpenID Connect, without Qt: Cognito's naming rules and derived URLs
(``cognito``), probing a provider's discovery document and JWKS (``discovery``), and
decoding Portico's own tokens against its JWKS (``tokens``)."""

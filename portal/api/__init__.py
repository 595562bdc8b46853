"""The product data API (/api/v1): credentials, schools' product authorisations, the purpose check and the record feed."""

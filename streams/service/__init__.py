"""The read service: memories.v1 and summaries.v1 materialized per tenant, served over HTTP."""

"""The medical-insurance rules (DESIGN §5): catalogue, policy, yearly accumulators and the split
of a bill — pure modules — plus the bill service and its stores (memory and SQL), the SQL tables
and the fee-record files. See specs/medical-files.md and specs/his-api.yaml."""

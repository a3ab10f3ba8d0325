"""The running config: compile a `Config` into the routing table (`compile`), replace the live one
(`live`: prepare, validate, swap, retire), watch the file (`watch`), and edit it (`edit`)."""

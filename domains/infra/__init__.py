"""What every domain uses and none owns: Redis clients, claims, keyset reads, pacing,
service availability, log context, metrics and tracing. Domains import from here;
nothing here imports a domain."""

"""`make chaos`: transfers and holds driven through Envoy while processes crash and dependencies
restart, then every promise of DESIGN.md §3 checked against what the clients were told."""

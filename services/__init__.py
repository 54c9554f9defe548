"""payrecon's services: one package per bounded context plus a shared kernel (no business rules)."""

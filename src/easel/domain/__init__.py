"""Pure domain code: no I/O, no torch. Every layer above may import it."""

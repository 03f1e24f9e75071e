"""One APIRouter per module; ``server.main`` wires them."""

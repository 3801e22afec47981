"""An import-linter contract for the top-level files: import-linter itself graphs packages only.

The tutorial files (agents.py, redis_stream_response_handler.py, worker.py, client.py, sample.py) and
the launchers (web.py, scheduler_server.py) are modules, not packages, so import-linter's own
`layers` contract cannot take them as sources. This contract reads each top-level file's imports
(every `import`, also inside functions and `if __name__ == "__main__":`) and checks them against
the same one-way order as the packages: a module may import what is listed below its own layer,
and nothing in its own layer but itself. pyproject.toml's `[tool.importlinter]` names the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


class TopLevelLayersContract(Contract):
    layers = fields.ListField(subfield=fields.StringField())  # top first; "a | b" share a layer, independent

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        layers: list[str] = self.layers  # type: ignore[assignment]  (a Field on the class, the parsed list here)
        rank = {name.strip(): index for index, layer in enumerate(layers) for name in layer.split("|")}
        broken = []
        for module in rank:
            path = Path(f"{module}.py")
            if not path.is_file():
                continue  # a package: import-linter's own contracts check it
            for imported, line in _first_party_imports(path, rank):
                if imported != module and rank[imported] <= rank[module]:
                    broken.append(f"{path}:{line} imports {imported} (not below {module})")
        return ContractCheck(kept=not broken, metadata={"broken": broken})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for problem in check.metadata["broken"]:
            output.print_error(problem)


def _first_party_imports(path: Path, known: dict[str, int]) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in known]
    return found

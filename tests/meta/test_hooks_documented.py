"""Every hook spec is documented with its exact signature; every RPC has a hook and a row."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from criadapt.plugin import get_plugin_manager
from criadapt.rpcs import RPCS
from criadapt.wire.pb import MESSAGES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def documented_signatures() -> dict[str, str]:
    text = (DOCS / "hooks.md").read_text() + (DOCS / "rpc-hooks.md").read_text()
    return {
        match.group(1): match.group(0)
        for match in re.finditer(r"^def (criadapt_\w+)\((.*)\) -> .*$", text, re.M)
    }


def test_every_hook_spec_is_documented_with_its_parameters() -> None:
    pm = get_plugin_manager()
    documented = documented_signatures()
    for name in pm.hook.__dict__:
        if not name.startswith("criadapt_"):
            continue
        assert name in documented, f"{name} is not documented in docs/hooks.md or rpc-hooks.md"
        spec = getattr(pm.hook, name).spec
        params = list(inspect.signature(spec.function).parameters)
        doc_params = re.findall(r"(\w+):", documented[name].split("(", 1)[1].rsplit(")", 1)[0])
        assert doc_params == params, name


def test_every_rpc_of_both_versions_has_a_table_row_and_a_spec() -> None:
    pm = get_plugin_manager()
    names = {rpc.name for rpc in RPCS}
    for version, module in MESSAGES.items():
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert method.name in names, (version, method.name)
    for rpc in RPCS:
        assert getattr(pm.hook, rpc.hook).spec.opts["firstresult"], rpc.hook

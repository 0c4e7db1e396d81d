"""Reading snakemake's output in tests (shared by test_workflow.py and test_slurm.py)."""


def job_stats(log: str) -> dict[str, int]:
    """Job counts per rule of snakemake's first 'Job stats' table ({} when nothing is scheduled)."""
    counts, inside = {}, False
    for line in log.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            inside = True
        elif inside and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


def rule_resources(log: str) -> dict[str, dict[str, str]]:
    """Resources per rule from snakemake's job listing (a dry run or a run): {rule: {name: value}}."""
    out: dict[str, dict[str, str]] = {}
    rule = None
    for line in log.splitlines():
        text = line.strip()
        if text.startswith(("rule ", "localrule ")) and text.endswith(":"):
            rule = text.split()[1][:-1]
        elif rule and text.startswith("resources:"):
            pairs = [item.strip().split("=", 1) for item in text[len("resources:"):].split(",")]
            out[rule] = {name: value for name, value in (p for p in pairs if len(p) == 2)}
    return out

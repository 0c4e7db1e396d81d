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

"""A search worker process: `python -m flow.search.worker JOB_JSON INDEX` joins the study and runs
trials until it is complete (started by flow.search.study.run_workers)."""
from __future__ import annotations

import logging
import sys


def main(argv: list[str]) -> int:
    """Load the context from the job's state folder and run trials (one torch thread)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s w{argv[1]} %(levelname)s %(name)s: %(message)s")
    import torch

    from flow.search.context import load_context
    from flow.search.study import StudyJob, optimize

    torch.set_num_threads(1)
    job = StudyJob.model_validate_json(argv[0])
    optimize(load_context(job.state_dir), job, int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The forked Lava child computes with torch even after the parent used a thread pool.

GNU OpenMP is not fork-safe: this hung the walkthrough notebook's chip run in CI (the notebook, unlike
the commands, leaves torch at its default threads and had trained with two before the fork).
"""
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import torch
    from netx_export.runtime.lava_session import run_in_own_group

    torch.set_num_threads(2)
    x = torch.rand(4_000_000)
    (x * 2 + 1).floor().sum()          # large enough to run on the OpenMP pool

    def work():
        y = torch.ones(4_000_000)
        return float((y * 2 + 1).floor().sum())

    print(run_in_own_group(work))
""")


def test_a_torch_op_in_the_forked_child_after_the_parent_used_its_thread_pool():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.split()[-1]) == 3 * 4_000_000

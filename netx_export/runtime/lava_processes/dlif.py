"""DLIF on Lava: a LIF with reset whose voltage decay follows a per-time-step schedule.

The schedule is indexed by the neuron's local time within each reset window, so the
bit-accurate Loihi update is the stock one with dv = dv_schedule[t].
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.process.variable import Var
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.lif.models import PyLifResetModelBitAcc
from lava.proc.lif.process import LIFReset


class DLIFReset(LIFReset):
    """LIFReset plus ``dv_schedule``: the 12-bit voltage decay for each step of the window."""

    def __init__(self, *, dv_schedule, **kwargs):
        super().__init__(**kwargs)
        schedule = np.asarray(dv_schedule, dtype=np.int32)
        if schedule.ndim != 1 or len(schedule) != self.proc_params["reset_interval"]:
            raise ValueError("dv_schedule needs one decay per time step of the reset interval")
        self.dv_schedule = Var(shape=schedule.shape, init=schedule)


@implements(proc=DLIFReset, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt", "bit_accurate_loihi")
class PyDLIFResetModelBitAcc(PyLifResetModelBitAcc):
    implements_process = None  # the parent's binding to LIFReset would block @implements
    dv_schedule: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=12)

    def run_spk(self):
        local_step = (self.time_step - self.reset_offset) % self.reset_interval
        self.dv = int(self.dv_schedule[local_step])
        super().run_spk()

"""Running a NetX file: the one chip-side time loop, the bit-exact emulator, Lava (Loihi2SimCfg / Loihi2HwCfg)."""

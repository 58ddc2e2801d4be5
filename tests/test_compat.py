"""The Python 3.11 shim: Lava imports, and the source fixes are exact and idempotent."""
import multiprocessing
import sys

from loihi_stable import compat


def test_lava_modules_import_on_this_python():
    import lava.lib.dl.netx  # noqa: F401
    import lava.lib.dl.slayer  # noqa: F401
    from lava.magma.compiler.var_model import CoreEncoder

    a, b = CoreEncoder(), CoreEncoder()
    assert a.x is not b.x  # default_factory, not one shared instance
    assert multiprocessing.get_start_method() == "fork"


def test_source_fixes_apply_once():
    src = "mp.set_start_method('fork')\n"
    once = compat.patch_source("lava.magma.runtime.message_infrastructure.multiprocessing", src)
    assert once == "mp.set_start_method('fork', force=True)\n"
    assert compat.patch_source("lava.magma.runtime.message_infrastructure.multiprocessing", once) == once
    assert compat.patch_source("some.other.module", src) == src


def test_install_is_idempotent():
    before = len(sys.meta_path)
    compat.install()
    compat.install()
    assert len(sys.meta_path) == before


def test_object_detection_placeholder_says_what_is_missing():
    import pytest
    from lava.lib.dl.slayer import obd

    with pytest.raises(ImportError, match="torchvision"):
        obd.yolo_base  # noqa: B018


def test_every_source_fix_matches_the_installed_lava():
    """A fix whose text is absent would silently do nothing: each must find its target."""
    import importlib.util

    for module, fixes in compat.SOURCE_FIXES.items():
        with open(importlib.util.find_spec(module).origin) as handle:
            source = handle.read()
        for old, new in fixes:
            assert old in source, (module, old)
            assert new in compat.patch_source(module, source)

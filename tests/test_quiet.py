"""The entry point silences known-harmless dependency chatter and nothing of ours."""

import logging
import warnings

from lightning_sdm.quiet import quiet_dependencies


def test_known_harmless_warnings_are_silenced_and_ours_are_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependencies()
        warnings.warn("Found 26 module(s) in eval mode at the start of training.", stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", stacklevel=1)
        warnings.warn(
            "Precision bf16-mixed is not supported by the model summary.  Estimated model size "
            "in MB will not be accurate. Using 32 bits instead.",
            stacklevel=1,
        )
        warnings.warn("requested 30 s but the model was trained on 3 s", stacklevel=1)
    assert [str(w.message) for w in caught] == ["requested 30 s but the model was trained on 3 s"]


def test_lightning_adverts_are_dropped_once_however_often_it_is_called(caplog):
    quiet_dependencies()
    quiet_dependencies()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(type(f).__name__ == "_DropAdverts" for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging, try installing litlogger")
        logger.info("GPU available: False, used: False")
    assert "litlogger" not in caplog.text and "GPU available" in caplog.text

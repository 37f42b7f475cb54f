"""The latent DataModule measures its latents' statistics over many batches."""

import shutil

import pytest
import torch

from lightning_sdm.data.latent_datamodule import LatentShardsDataModule
from tests.data.shard_fixtures import write_shards

DIM = 4


def data_over(shards, **changes):
    options = dict(train_dir=str(shards), batch_size=4, num_workers=0, segment_seconds=0.4)
    data = LatentShardsDataModule(**{**options, **changes})
    data.setup("fit")
    return data


def test_latent_moments_cover_the_training_split_and_stop_at_max_batches(tmp_path):
    shards = tmp_path / "shards"
    # 20-frame items and 0.4 s segments at 50 Hz: every crop is a whole item
    write_shards(shards, [20] * 12, items_per_shard=4, latent_dim=DIM, gains=[1, 10] * 6)
    data = data_over(shards)
    moments = data.latent_moments()
    assert moments[2] == 12 * 20 * DIM
    expected = torch.zeros(3, dtype=torch.float64)
    shutil.copytree(shards, tmp_path / "copy")  # the training items, read in fixed crops
    for batch in data_over(shards, val_dir=str(tmp_path / "copy")).val_dataloader():
        real = batch["latents"].double().transpose(1, 2)[batch["padding_mask"]]
        expected += torch.tensor([real.sum(), real.square().sum(), real.numel()])
    assert torch.allclose(moments, expected)
    assert data.latent_moments(max_batches=1)[2] == 4 * 20 * DIM
    with pytest.raises(ValueError, match="max_batches must be >= 1"):
        data.latent_moments(max_batches=0)


def test_latent_shards_at_a_url_give_the_moments_of_the_same_folder_on_disk(tmp_path):
    from tests.data.http_fixtures import FolderServer

    shards = tmp_path / "shards"
    write_shards(shards, [20] * 8, items_per_shard=4, latent_dim=DIM, gains=[1, 10] * 4)
    with FolderServer(shards) as server:
        remote = data_over(server.url).latent_moments()
    assert torch.equal(remote, data_over(shards).latent_moments())

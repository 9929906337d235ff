"""torch adaptor of the pretraining record stream (mindtransformer/data/loaders.py)."""

from torch.utils.data import IterableDataset, get_worker_info


class PretrainingData(IterableDataset):
    """This rank's batches of one epoch from batch `skip` on, split over DataLoader workers.

    Use with DataLoader(dataset, batch_size=None, num_workers=W, multiprocessing_context="spawn");
    the batches then arrive in the stream's order whatever W."""

    def __init__(self, stream, epoch: int = 0, skip: int = 0):
        super().__init__()
        self.stream, self.epoch, self.skip = stream, epoch, skip

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return self.stream.batches(self.epoch, self.skip, worker, workers)

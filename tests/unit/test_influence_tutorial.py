"""Captum's TracInCP tutorial (``tutorials/TracInCP_Tutorial.ipynb``) replayed call for call, once with
``from captum.influence import TracInCP, TracInCPFast, TracInCPFastRandProj`` and once with the import swapped for
``attrkit.influence``, on the same data and the same checkpoint files; the two runs must agree.

Offline stand-ins, everything else as the tutorial does it: CIFAR-10 becomes a small synthetic 32 x 32 colour set
with 10 classes (each class a colour and a stripe direction, plus noise) through the tutorial's ``ToTensor`` and
``Normalize`` transform; the network has the tutorial's layers in the tutorial's order -- which matters, because the
tutorial passes ``final_fc_layer=list(net.children())[-1]``, the *last registered child* ``relu4``, so both
libraries read the input of that ReLU (``fc2``'s output) as the last layer's activation; training is a few
epochs of the tutorial's loop (with Adam), saving checkpoints as the tutorial does (a dict with ``"model_state_dict"``)
into a folder found again with ``glob``. Two substitutions: Annoy is not installed (and approximate), so the
random-projection index gets the exact ``TopKNearestNeighbors`` in both runs; ``sklearn``'s ``roc_curve`` is used
as in the tutorial when scikit-learn is installed. The tutorial imports ``TracInCP`` but never calls it; the last
test calls it on the same checkpoints, with ``show_progress=True`` (the tutorial passes no progress flag).
"""
import glob
import os
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.utils.data import DataLoader, Dataset

import attrkit.influence
import captum.influence

transforms = pytest.importorskip("torchvision.transforms")
N_TRAIN, N_TEST, EPOCHS = 300, 8, 3


class Net(nn.Module):
    """The tutorial's CIFAR network: two conv + pool stages, three linear layers, ReLUs registered last."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 5), nn.Conv2d(6, 16, 5)
        self.pool1, self.pool2 = nn.MaxPool2d(2, 2), nn.MaxPool2d(2, 2)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)
        self.relu1, self.relu2, self.relu3, self.relu4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.pool2(self.relu2(self.conv2(self.pool1(self.relu1(self.conv1(x))))))
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x.view(-1, 16 * 5 * 5))))))


class SyntheticCIFAR(Dataset):
    """CIFAR-10's interface (``(image, int label)`` through ``transform``) over generated 32 x 32 uint8 images."""

    def __init__(self, n, seed, transform):
        rng = np.random.default_rng(seed)
        self.targets = rng.integers(0, 10, n).tolist()
        colours = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40], [200, 40, 200],
                            [40, 200, 200], [220, 220, 220], [60, 60, 60], [220, 130, 40], [130, 40, 220]])
        grid = np.arange(32)
        images = []
        for label in self.targets:
            stripes = np.sin((grid[:, None] * (label % 5 + 1) + grid[None, :] * (label // 5)) / 3.0)
            image = colours[label][None, None, :] + 30 * stripes[..., None] + rng.normal(0, 10, (32, 32, 3))
            images.append(np.clip(image, 0, 255).astype(np.uint8))
        self.data = [transform(image) for image in images]     # transformed once: the tests index it often

    def __getitem__(self, i):
        return self.data[i], self.targets[i]

    def __len__(self):
        return len(self.data)


class MislabelledDataset(Dataset):
    def __init__(self, correct_dataset, mislabelled_dataset_labels):
        self.correct_dataset, self.mislabelled_dataset_labels = correct_dataset, mislabelled_dataset_labels

    def __getitem__(self, i):
        return self.correct_dataset[i][0], self.mislabelled_dataset_labels[i]

    def __len__(self):
        return len(self.correct_dataset)


def train(net, num_epochs, train_dataloader, checkpoints_dir, save_every):
    """The tutorial's loop and checkpoint format (mean cross-entropy; Adam instead of its SGD, so three epochs learn)."""
    os.makedirs(checkpoints_dir, exist_ok=True)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(num_epochs):
        for inputs, labels in train_dataloader:
            optimizer.zero_grad()
            criterion(net(inputs), labels).backward()
            optimizer.step()
        if epoch % save_every == 0:
            torch.save({"epoch": epoch, "model_state_dict": net.state_dict(),
                        "optimizer_state_dict": optimizer.state_dict(), "loss": 0.0},
                       os.path.join(checkpoints_dir, f"checkpoint-{epoch}.pt"))


def checkpoints_load_func(net, path):
    weights = torch.load(path)
    net.load_state_dict(weights["model_state_dict"])
    return 1.


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The tutorial's preparation, once: datasets, the two trainings and their checkpoint folders."""
    root = tmp_path_factory.mktemp("tutorial")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                  # tiny convolutions: extra threads only contend on a busy machine
    try:
        yield _prepare(root)
    finally:
        torch.set_num_threads(threads)


def _prepare(root):
    torch.manual_seed(0)
    normalize = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    correct_dataset = SyntheticCIFAR(N_TRAIN, 1, normalize)
    test_dataset = SyntheticCIFAR(N_TEST, 2, normalize)
    correct_dir = os.path.join(root, "checkpoints", "cifar_10_correct_dataset")
    train(Net(), EPOCHS, DataLoader(correct_dataset, batch_size=32, shuffle=True), correct_dir, save_every=1)
    correct_dataset_final_checkpoint = os.path.join(correct_dir, "-".join(["checkpoint", str(EPOCHS - 1) + ".pt"]))

    # the tutorial's mislabelled copy: 10 % of the labels set to the final model's most probable wrong class
    correct_dataset_net = Net()
    checkpoints_load_func(correct_dataset_net, correct_dataset_final_checkpoint)
    incorrect_labels, correct_labels = [], []
    with torch.no_grad():
        for batch_features, batch_correct_labels in DataLoader(correct_dataset, batch_size=128, shuffle=False):
            batch_predictions = F.softmax(correct_dataset_net(batch_features), dim=1)
            batch_predictions[torch.arange(0, len(batch_predictions)), batch_correct_labels] = 0
            incorrect_labels.append(torch.argmax(batch_predictions, dim=1))
            correct_labels.append(batch_correct_labels)
    incorrect_labels, correct_labels = torch.cat(incorrect_labels), torch.cat(correct_labels)
    use_incorrect = torch.rand(len(incorrect_labels)) < 0.10
    mislabelled_dataset = MislabelledDataset(
        correct_dataset, (use_incorrect * incorrect_labels) + ((~use_incorrect) * correct_labels))
    is_mislabelled = torch.tensor([mislabelled_dataset[i][1] != correct_dataset[i][1]
                                   for i in range(len(mislabelled_dataset))])
    mislabelled_dir = os.path.join(root, "checkpoints", "cifar_10_mislabelled_dataset")
    train(Net(), EPOCHS + 2, DataLoader(mislabelled_dataset, batch_size=32, shuffle=True), mislabelled_dir,
          save_every=2)
    return dict(correct_dataset=correct_dataset, test_dataset=test_dataset, correct_dir=correct_dir,
                final=correct_dataset_final_checkpoint, mislabelled_dataset=mislabelled_dataset,
                mislabelled_dir=mislabelled_dir, is_mislabelled=is_mislabelled)


def _fast_section(lib, world):
    """The tutorial's TracInCPFast and TracInCPFastRandProj calls on the correctly labelled data."""
    TracInCPFast, TracInCPFastRandProj = lib.TracInCPFast, lib.TracInCPFastRandProj
    correct_dataset, test_dataset = world["correct_dataset"], world["test_dataset"]
    correct_dataset_checkpoint_paths = glob.glob(os.path.join(world["correct_dir"], "*.pt"))
    net = Net()
    checkpoints_load_func(net, world["final"])
    test_examples_indices = [0, 1, 2, 3]
    test_examples_features = torch.stack([test_dataset[i][0] for i in test_examples_indices])
    test_examples_true_labels = torch.Tensor([test_dataset[i][1] for i in test_examples_indices]).long()
    out = {}
    tracin_cp_fast = TracInCPFast(
        model=net,
        final_fc_layer=list(net.children())[-1],
        train_dataset=correct_dataset,
        checkpoints=correct_dataset_checkpoint_paths,
        checkpoints_load_func=checkpoints_load_func,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=2048,
        vectorize=False,
    )
    k = 10
    out["fast_proponents"] = tracin_cp_fast.influence((test_examples_features, test_examples_true_labels), k=k,
                                                      proponents=True)
    out["fast_opponents"] = tracin_cp_fast.influence((test_examples_features, test_examples_true_labels), k=k,
                                                     proponents=False)
    proponents_indices, _ = out["fast_proponents"]
    for test_example_proponents in proponents_indices:        # the tutorial's display indexes the dataset with them
        tensors, labels = zip(*[correct_dataset[i] for i in test_example_proponents])
        assert len(tensors) == k and all(t.shape == (3, 32, 32) for t in tensors)
    tracin_cp_fast_rand_proj = TracInCPFastRandProj(
        model=net,
        final_fc_layer=list(net.children())[-1],
        train_dataset=correct_dataset,
        checkpoints=correct_dataset_checkpoint_paths,
        checkpoints_load_func=checkpoints_load_func,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=128,
        nearest_neighbors=attrkit.influence.TopKNearestNeighbors(),     # the tutorial: AnnoyNearestNeighbors(100)
        projection_dim=100,
    )
    out["proj_proponents"] = tracin_cp_fast_rand_proj.influence((test_examples_features, test_examples_true_labels),
                                                                k=k, proponents=True)
    out["proj_opponents"] = tracin_cp_fast_rand_proj.influence((test_examples_features, test_examples_true_labels),
                                                               k=k, proponents=False)
    return out


def _self_influence_section(lib, world):
    """The tutorial's search for mislabelled examples: self influence over the mislabelled training set."""
    net = Net()
    mislabelled_dataset_checkpoint_paths = glob.glob(os.path.join(world["mislabelled_dir"], "*.pt"))
    tracin_cp_fast = lib.TracInCPFast(
        model=net,
        final_fc_layer=list(net.children())[-1],
        train_dataset=world["mislabelled_dataset"],
        checkpoints=mislabelled_dataset_checkpoint_paths,
        checkpoints_load_func=checkpoints_load_func,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=2048,
    )
    return tracin_cp_fast.self_influence()


def _close(a, b):
    torch.testing.assert_close(a.double(), b.double(), rtol=1e-4, atol=1e-6)


def _run(section, world):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")                   # as the tutorial does
        return section(captum.influence, world), section(attrkit.influence, world)


def test_tutorial_proponents_and_opponents_equal_captum(world):
    theirs, ours = _run(_fast_section, world)
    for name in theirs:
        indices, scores = ours[name]
        assert indices.shape == scores.shape == (4, 10), name
        assert torch.equal(indices, theirs[name].indices), name
        _close(scores, theirs[name].influence_scores)
    assert not torch.equal(ours["fast_proponents"].indices, ours["fast_opponents"].indices)
    assert (ours["fast_proponents"].influence_scores.min(1).values
            >= ours["fast_opponents"].influence_scores.max(1).values).all()


def test_tutorial_self_influence_finds_the_mislabelled_examples_as_captum_does(world):
    theirs, ours = _run(_self_influence_section, world)
    assert ours.shape == (N_TRAIN,)
    _close(ours, theirs)
    is_mislabelled = world["is_mislabelled"]
    assert 0 < is_mislabelled.sum() < N_TRAIN
    metrics = pytest.importorskip("sklearn.metrics")
    fpr, tpr, _ = metrics.roc_curve(is_mislabelled, ours)
    ours_auc = metrics.auc(fpr, tpr)
    fpr, tpr, _ = metrics.roc_curve(is_mislabelled, theirs)
    assert abs(ours_auc - metrics.auc(fpr, tpr)) < 1e-9
    assert ours_auc > 0.9, ours_auc              # the tutorial's point: mislabelled examples have high self influence


def test_tracincp_imported_by_the_tutorial_equals_captum_with_progress_bars(world, capsys):
    """Beyond the tutorial (it imports TracInCP but never calls it): the same checkpoints through TracInCP."""
    def section(lib, world):
        net = Net()
        paths = glob.glob(os.path.join(world["correct_dir"], "*.pt"))
        tracin_cp = lib.TracInCP(net, world["correct_dataset"], paths, checkpoints_load_func, layers=["fc3"],
                                 loss_fn=nn.CrossEntropyLoss(reduction="none"), batch_size=128)
        test = (torch.stack([world["test_dataset"][i][0] for i in range(4)]),
                torch.tensor([world["test_dataset"][i][1] for i in range(4)]))
        return (tracin_cp.influence(test, k=5, proponents=True, show_progress=True),
                tracin_cp.self_influence(show_progress=True))
    (their_top, their_self), (our_top, our_self) = _run(section, world)
    assert torch.equal(our_top.indices, their_top.indices)
    _close(our_top.influence_scores, their_top.influence_scores)
    _close(our_self, their_self)

"""From one prediction to a whole dataset: summarizers, DataLoaderAttribution and ``attribute_dataset``."""
from .stat import MSE, CommonStats, Count, Max, Mean, Min, Stat, StatValue, StdDev, Sum, Var
from .summarizer import ClassSummarizer, Summarizer, SummarizerSingleTensor
from .roles import InputRole
from .dataloader_attr import DataLoaderAttribution
from .store import DatasetAttribution, open_store
from .stream import attribute_dataset, init_distributed

__all__ = ["Stat", "StatValue", "Count", "Mean", "MSE", "Var", "StdDev", "Min", "Max", "Sum", "CommonStats",
           "Summarizer", "SummarizerSingleTensor", "ClassSummarizer", "DataLoaderAttribution", "InputRole",
           "attribute_dataset", "init_distributed", "DatasetAttribution", "open_store"]

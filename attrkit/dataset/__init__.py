"""From one prediction to a whole dataset: summarizers, DataLoaderAttribution and ``attribute_dataset``."""
from .summarizer import (ClassSummarizer, CommonStats, Count, Max, Mean, Min, MSE, Stat, StatValue, StdDev, Sum,
                         Summarizer, SummarizerSingleTensor, Var)
from .dataloader_attr import DataLoaderAttribution, InputRole

__all__ = ["Stat", "StatValue", "Count", "Mean", "MSE", "Var", "StdDev", "Min", "Max", "Sum", "CommonStats",
           "Summarizer", "SummarizerSingleTensor", "ClassSummarizer", "DataLoaderAttribution", "InputRole"]

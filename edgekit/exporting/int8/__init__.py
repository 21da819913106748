"""int8: plan, targets, search, sensitivity, report, QAT export."""

"""The control plane: version lifecycle (switch, restore, retention, rollback), retrain
job and backends, the archiver and state materialisation from the ratings log.
"""

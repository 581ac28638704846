task_acks_lates = False

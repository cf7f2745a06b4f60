"""stepsmith.tasks"""

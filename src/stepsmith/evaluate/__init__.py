"""stepsmith.evaluate"""

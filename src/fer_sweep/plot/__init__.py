"""Plot"""

"""Typed readers and writers of sparcom's files: profile runs and selections (below analysis, so analysis never
imports profile)."""

"""gridwatch: a substation (readings -> threshold rules -> breaker dispatch -> audit)."""

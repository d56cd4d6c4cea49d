DROP TABLE feature_store;

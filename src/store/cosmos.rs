//! The Azure Cosmos DB backend of [`super::Store`].

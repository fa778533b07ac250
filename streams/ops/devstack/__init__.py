"""The local development stack: Apache Kafka (KRaft) and Apicurio Registry, run with the JDK."""

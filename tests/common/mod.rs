pub mod test1;

#include <cstdio>
int main() { std::puts("sparsa"); return 0; }

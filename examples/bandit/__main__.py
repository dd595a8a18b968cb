def main() -> None:
    print("bandit: not yet")


if __name__ == "__main__":
    main()

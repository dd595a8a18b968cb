from mycelium_mono import U32, U64, message


@message(type_id=101, topic="loans")
class BookBorrowed:
    book_id: U64
    member_id: U32

@message(type_id=102, topic="loans")
class BookReturned:
    book_id: U64
    member_id: U32
    days_late: U32

@message(type_id=103, topic="fines")
class FineIssued:
    member_id: U32
    cents: U64
